{#- A UUIDv7 (RFC 9562) from gen_random_uuid(): the 48-bit millisecond timestamp over the first
    six bytes, version 7 in byte 6; the variant bits are already 10 (gen_random_uuid is v4).
    PostgreSQL compares uuids bytewise, so these sort by time (dbtools.uuid7, "postgresql").
    Expects v_uuid7_bytes bytea to be declared. -#}
{%- macro new_uuid7(target) -%}
    v_uuid7_bytes := overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6);
    v_uuid7_bytes := set_byte(v_uuid7_bytes, 6, (get_byte(v_uuid7_bytes, 6) & 15) | 112);
    {{ target }} := encode(v_uuid7_bytes, 'hex')::uuid;
{%- endmacro -%}
