{#-
    Fails for every live row whose (pipeline, stage) is not a stage of that pipeline in the
    tenant's portal, as read into `stages_model` (deal_stages): HubSpot portals have custom
    pipelines and stage ids, so validity is checked against them, not against a fixed list.
-#}
{% test valid_deal_stage(model, column_name, pipeline_column, stages_model) %}

    select
        checked._tenant_id,
        checked.id,
        checked.{{ pipeline_column }} as pipeline,
        checked.{{ column_name }} as dealstage
    from {{ model }} as checked
    left join {{ stages_model }} as stages
        on
            checked._tenant_id = stages._tenant_id
            and checked.{{ pipeline_column }} = stages.pipeline_id
            and checked.{{ column_name }} = stages.stage_id
    where
        checked.{{ column_name }} is not null
        and not checked.archived
        and stages.stage_id is null

{% endtest %}
