{#-
    Parsing HubSpot's property values (always strings, or null) into typed columns. Every branch
    is guarded by a pattern so that a bad value becomes null instead of failing the build (a cast
    that raises would fail the whole model); the staging model keeps the raw text next to the
    parsed value so that int_deal_versions_validated can tell "empty" from "unparseable" and
    record the reason in deals_quarantine.
-#}

{#- The pattern of a plain or scientific decimal number, as HubSpot renders numbers. -#}
{% macro numeric_text_pattern() -%}
    '^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]{1,3})?$'
{%- endmacro %}

{% macro parse_numeric(expression, precision=15, scale=2) -%}
    {%- set expression = '(' ~ expression ~ ')' %}
    case
        when trim({{ expression }}) ~ {{ numeric_text_pattern() }}
            then
                case
                    when
                        abs(round(trim({{ expression }})::numeric, {{ scale }}))
                        < power(10::numeric, {{ precision - scale }})
                        then round(trim({{ expression }})::numeric, {{ scale }})::numeric(
                            {{ precision }}, {{ scale }}
                        )
                end
    end
{%- endmacro %}

{#-
    ISO-8601 date, date-time (optional seconds, fraction and offset) or epoch milliseconds, to a
    UTC timestamp without time zone. The pattern rejects impossible months, hours and offsets;
    the day is checked against the month's length so that "2024-02-30" is null, not an error.
-#}
{% macro parse_timestamp(expression) -%}
    {%- set expression = '(' ~ expression ~ ')' %}
    {%- set ymd = "[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])" %}
    {%- set time = "([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,6})?)?" %}
    {%- set offset = "(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)?" %}
    case
        when
            {{ expression }} ~ '^{{ ymd }}([T ]{{ time }}{{ offset }})?$'
            and substr({{ expression }}, 9, 2)::integer <= extract(
                day from (
                    make_date(
                        substr({{ expression }}, 1, 4)::integer,
                        substr({{ expression }}, 6, 2)::integer,
                        1
                    ) + interval '1 month - 1 day'
                )
            )
            then
                case
                    when length({{ expression }}) = 10
                        then to_date({{ expression }}, 'YYYY-MM-DD')::timestamp
                    when {{ expression }} ~ '{{ offset[:-1] }}$'
                        then ({{ expression }}::timestamptz at time zone 'UTC')
                    {#- Without an offset the value is taken as UTC, whatever the session's zone. #}
                    else {{ expression }}::timestamp
                end
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
