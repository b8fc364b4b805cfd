{#- Raise every collected validation error at once (Ola Hallengren style).
    Expects a table variable @Errors (ErrorId int IDENTITY, Message nvarchar(2000)) and a
    variable @ErrorText nvarchar(max). THROW takes at most 2048 characters and treats % as
    a format character, so % is doubled after truncation is decided. -#}
{%- macro raise_collected(error_number) -%}
        IF EXISTS (SELECT 1 FROM @Errors)
        BEGIN
            SELECT @ErrorText = STRING_AGG(CONVERT(nvarchar(max), e.Message), NCHAR(10))
                WITHIN GROUP (ORDER BY e.ErrorId)
            FROM @Errors AS e;
            IF DATALENGTH(@ErrorText) > 2000 -- over 1000 characters; LEN would ignore trailing spaces
                SET @ErrorText = LEFT(@ErrorText, 984) + N' ... (truncated)';
            SET @ErrorText = REPLACE(@ErrorText, N'%', N'%%');
            THROW {{ error_number }}, @ErrorText, 1;
        END;
{%- endmacro -%}
