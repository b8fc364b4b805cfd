{#- Raise every collected validation error at once (Ola Hallengren style).
    Expects a table variable @Errors (ErrorId int IDENTITY, Message nvarchar(2000)) and a
    variable @ErrorText nvarchar(max). THROW takes at most 2048 characters. -#}
{%- macro raise_collected(error_number) -%}
        IF EXISTS (SELECT 1 FROM @Errors)
        BEGIN
            SELECT @ErrorText = STRING_AGG(CONVERT(nvarchar(max), e.Message), NCHAR(10))
                WITHIN GROUP (ORDER BY e.ErrorId)
            FROM @Errors AS e;
            SET @ErrorText = LEFT(@ErrorText, 2000);
            THROW {{ error_number }}, @ErrorText, 1;
        END;
{%- endmacro -%}
