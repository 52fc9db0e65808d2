{#-
    Parsing HubSpot's property values (always strings, or null) into typed columns. Every branch
    is guarded by a pattern so that a bad value becomes null instead of failing the build; the
    staging model keeps the raw text next to it so bad values can be quarantined with a reason.
-#}

{% macro parse_numeric(expression, precision=15, scale=2) -%}
    {%- set expression = '(' ~ expression ~ ')' %}
    case
        when
            trim({{ expression }})
            ~ '^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]{1,3})?$'
            then
                case
                    when
                        abs(trim({{ expression }})::numeric)
                        < power(10::numeric, {{ precision - scale }}) - 0.005
                        then round(trim({{ expression }})::numeric, {{ scale }})
                end
    end
{%- endmacro %}

{% macro parse_timestamp(expression) -%}
    {%- set expression = '(' ~ expression ~ ')' %}
    case
        when {{ expression }} ~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$'
            then to_date({{ expression }}, 'YYYY-MM-DD')::timestamp
        when
            {{ expression }}
            ~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,6})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$'
            then ({{ expression }}::timestamptz at time zone 'UTC')
        when {{ expression }} ~ '^[0-9]{10,13}$'
            then (to_timestamp({{ expression }}::bigint / 1000.0) at time zone 'UTC')
    end
{%- endmacro %}

{% macro parse_boolean(expression) -%}
    {%- set expression = '(' ~ expression ~ ')' %}
    case
        when lower(trim({{ expression }})) in ('true', 't', '1', 'yes') then true
        when lower(trim({{ expression }})) in ('false', 'f', '0', 'no') then false
    end
{%- endmacro %}
