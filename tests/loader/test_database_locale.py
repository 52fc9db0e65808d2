"""The locale of the databases the loader creates (``loader.db.create_database``): PostgreSQL's
``builtin`` provider with ``C.UTF-8`` from PostgreSQL 17 on (the embedded server), the server's
default before it (PostgreSQL 15 here), with the same text rules either way: code-point order,
Unicode case mapping."""

from __future__ import annotations

import psycopg2.extensions

from loader import db
from tests.conftest import query


def test_the_database_takes_the_builtin_provider_from_postgresql_17(
        db_conn: psycopg2.extensions.connection) -> None:
    [(version, provider, encoding)] = query(db_conn, """
        select current_setting('server_version_num')::int, d.datlocprovider,
               pg_encoding_to_char(d.encoding)
        from pg_database as d where d.datname = current_database()""")
    assert encoding == "UTF8"
    if version >= db.BUILTIN_LOCALE_SERVER_VERSION:
        assert provider == "b"
        [(locale,)] = query(db_conn, "select datlocale from pg_database "
                                     "where datname = current_database()")
        assert locale == "C.UTF-8"
    else:
        assert provider == "c"


def test_text_sorts_by_code_point_and_case_folds_beyond_ascii(
        db_conn: psycopg2.extensions.connection) -> None:
    [(ordered, lowered, found, not_found)] = query(db_conn, """
        select
            (select array_agg(x order by x)
             from unnest(array['b', 'é', 'Z', 'É', 'a', 'Überweisung']) as x),
            lower('ÜBERWEISUNG Ærø ΑΘΉΝΑ'),
            'Überweisung GmbH' ilike '%überw%',
            'Überweisung GmbH' ilike '%uberw%'""")
    assert ordered == ["Z", "a", "b", "É", "Überweisung", "é"]
    assert lowered == "überweisung ærø αθήνα"
    assert found is True
    assert not_found is False
