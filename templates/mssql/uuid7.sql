{#- A UUIDv7 laid out for SQL Server's uniqueidentifier order (dbtools.uuid7, "mssql"): the
    48-bit millisecond timestamp in the last six bytes (compared first), the variant bits in byte 8,
    version 7 in the high nibble of byte 7 (group 3 is stored little-endian), random elsewhere.
    Expects @Uuid7Random binary(10) and @Uuid7Ms bigint to be declared. -#}
{%- macro new_uuid7(target) -%}
        SET @Uuid7Random = CRYPT_GEN_RANDOM(10);
        SET @Uuid7Ms = DATEDIFF_BIG(MILLISECOND, CONVERT(datetime2(3), '1970-01-01'), SYSUTCDATETIME());
        SET {{ target }} = CONVERT(uniqueidentifier,
            SUBSTRING(@Uuid7Random, 1, 7)
            + CONVERT(binary(1), 0x70 | (CONVERT(tinyint, SUBSTRING(@Uuid7Random, 8, 1)) & 0x0F))
            + CONVERT(binary(1), 0x80 | (CONVERT(tinyint, SUBSTRING(@Uuid7Random, 9, 1)) & 0x3F))
            + SUBSTRING(@Uuid7Random, 10, 1)
            + SUBSTRING(CONVERT(binary(8), @Uuid7Ms), 3, 6));
{%- endmacro -%}
