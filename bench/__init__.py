"""``python -m bench`` (``make bench``): the loader measured against its ceilings, in one run.

Everything runs on this machine: a throwaway embedded PostgreSQL under a temporary
``LOADER_HOME`` (stopped and deleted at the end, so the user's ``.loader`` is never touched) and
the HubSpot sandbox in its own process. The loader and dbt run as subprocesses exactly as a user
runs them (``python -m loader run ...``, ``python -m loader transform``), from the project root.

Sections (README.md, "Performance", says what each measures and how):

- source ceiling: the loader's pages fetched by a bare HTTP client and thrown away;
- sink ceiling: the same rows loaded by PostgreSQL ``COPY`` into equivalent tables;
- full scan: our loader end to end (raw landed, no dbt), and its ratio to the lower ceiling;
- naive reference: sequential requests and row-by-row inserts, on one tenant's first 5,000 deals;
- incremental scan after 1% of deals change: requests and seconds, as ratios to the full scan;
- rate-limit utilisation against the throttled sandbox;
- dbt: full build, and incremental build after the 1% change;
- loader peak RSS at N and 5×N deals;
- the seed's common queries as a ``hubspot_analyst`` member under RLS and as the owner without
  it (``--query-deals 1000000 --query-tenants 100`` for the 1,000,000-deal figures).

Results go to a rich table on stdout and to ``bench/results.json``. Benchmarks are not tests:
nothing here asserts a timing; the targets are reported as met or not.
"""
