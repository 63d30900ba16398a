"""Tables of modules and relations of models, from Django's app registry (no Kafka needed)."""
from __future__ import annotations

import pytest

import fusion_events
from backup_archive.resolve import backup_tables, module_tables, relations, resolve_timestamp_column
from tests.sampleapp.models import Article, Comment, Tag


def test_module_tables_use_db_table_and_m2m_tables() -> None:
    tables = module_tables(["sampleapp"])
    assert "Blog Article" in tables  # the custom db_table, spaces and capitals as PostgreSQL stores them
    assert "Blog Article_tags" in tables  # the auto-created M2M table, named after the custom db_table
    assert {"sampleapp_tag", "sampleapp_comment", "sampleapp_reply", "sampleapp_bookmark", "sampleapp_citation",
            "sampleapp_mention", "sampleapp_revision"} <= set(tables)
    assert "external_thing" not in tables  # unmanaged: not Django's table to back up
    assert len(tables) == len(set(tables))  # the proxy model adds no second "Blog Article"


def test_backup_tables_merge_explicit_tables_without_duplicates() -> None:
    tables = backup_tables(["sampleapp"], ["Blog Article", ["public", "sampleapp_tag"], ["audit", "Log Entry"]])
    assert tables.count("Blog Article") == 1
    assert ["public", "sampleapp_tag"] not in tables  # same table as the module's "sampleapp_tag"
    assert tables[-1] == ["audit", "Log Entry"]


def test_unknown_module_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="'nosuchapp' is not an installed Django app"):
        module_tables(["nosuchapp"])


def _by_key(rels):
    return {(r["table"], r["column"], r["references"]): r for r in rels}


def test_relations_of_a_model_with_every_on_delete() -> None:
    rels = relations(Article)
    got = {k: r["on_delete"] for k, r in _by_key(rels).items()}
    assert got == {
        ("Blog Article_tags", "article_id", "Blog Article"): "CASCADE",   # m2m rows go with the article
        ("sampleapp_comment", "article_id", "Blog Article"): "CASCADE",
        ("sampleapp_comment", "parent_id", "sampleapp_comment"): "CASCADE",    # CASCADE child's own children ...
        ("sampleapp_reply", "commentRef", "sampleapp_comment"): "CASCADE",     # ... at every level
        ("sampleapp_bookmark", "article_id", "Blog Article"): "SET_NULL",      # hidden (related_name='+') too
        ("sampleapp_citation", "article_id", "Blog Article"): "PROTECT",
        ("sampleapp_mention", "article_id", "Blog Article"): "DO_NOTHING",
        ("sampleapp_revision", "article_id", "Blog Article"): "PROTECT",       # RESTRICT has no SPEC value
    }
    by = _by_key(rels)
    rev = by[("sampleapp_revision", "article_id", "Blog Article")]
    assert rev["to_column"] == "slug" and rev["pk_column"] == "code" and rev["model_name"] == "Revision"
    reply = by[("sampleapp_reply", "commentRef", "sampleapp_comment")]
    assert reply == {"table": "sampleapp_reply", "column": "commentRef", "references": "sampleapp_comment",
                     "on_delete": "CASCADE", "to_column": None, "module": "sampleapp", "model_name": "Reply",
                     "pk_column": "id"}
    m2m = by[("Blog Article_tags", "article_id", "Blog Article")]
    assert m2m["module"] == "sampleapp" and m2m["model_name"] == "Article_tags"
    # Parents come before their children, so a worker can walk the list top-down.
    keys = [(r["table"], r["references"]) for r in rels]
    assert keys.index(("sampleapp_comment", "Blog Article")) < keys.index(("sampleapp_reply", "sampleapp_comment"))


def test_relations_stop_at_non_cascade_and_handle_self_reference() -> None:
    assert {(r["table"], r["column"]) for r in relations(Comment)} == {
        ("sampleapp_comment", "parent_id"), ("sampleapp_reply", "commentRef")}
    assert [(r["table"], r["column"], r["on_delete"]) for r in relations(Tag)] == [
        ("Blog Article_tags", "tag_id", "CASCADE")]


def test_relations_fit_the_contract() -> None:
    event = {"v": 1, "type": "archive.due", "job_id": "0b6e7d8c-3f2a-4c1e-9a5b-7d2e4f6a8b0c", "ts": 1,
             "requested_by": None, "attempt": 1, "policy_id": 1, "module": "sampleapp", "model_name": "Article",
             "table": "Blog Article", "pk_column": "id", "timestamp_column": "published_at", "cutoff": 0,
             "batch_size": 10, "max_rows": None, "purge_before": None, "archived_by": None, "dry_run": True,
             "relations": relations(Article)}
    assert fusion_events.decode(fusion_events.encode(event))["relations"] == event["relations"]


def test_timestamp_column_by_field_or_column_name() -> None:
    assert resolve_timestamp_column(Article, "published_at") == "published_at"
    assert resolve_timestamp_column(Comment, "created") == "created"
    with pytest.raises(LookupError, match="not a date or time"):
        resolve_timestamp_column(Article, "title")
    with pytest.raises(LookupError, match="no field or column 'nope'"):
        resolve_timestamp_column(Article, "nope")
