"""The read-mostly commands and the daemon: validate, plan, status, gc, run, match, export."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gitsync.errors import ConfigError

if TYPE_CHECKING:
    pass

from gitsync.cli.base import (
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_NO_MATCH,
    EXIT_OK,
    TencentCredentials,
    checkout,
    command_settings,
    error_text,
    open_provider,
)


def cmd_validate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import reports, specs  # keep `--help` fast

    output_format = command_settings(args, env).text("--format", "text")
    if output_format not in reports.DIAGNOSTIC_FORMATS:
        raise ConfigError(
            f"--format: {output_format!r} is not one of {', '.join(reports.DIAGNOSTIC_FORMATS)}"
        )
    paths = [Path(p) for p in (args.paths or ["."])]
    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        raise ConfigError(f"no such file or directory: {', '.join(missing)}")
    result = specs.load_repository(paths, root=Path.cwd())
    text = reports.format_diagnostics(
        result.diagnostics,
        output_format=output_format,
        files=result.files,
        documents=result.documents,
        caches=len(result.caches),
    )
    if text:
        print(text)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_plan(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import planning, reports, specs, wiring  # keep `validate` fast
    from gitsync.controller_record import RecordFile
    from gitsync.reconciler import keep_names

    settings = command_settings(args, env)
    common = settings.common
    output_format = settings.plan.format
    if output_format not in reports.PLAN_FORMATS:
        raise ConfigError(
            f"--format: {output_format!r} is not one of {', '.join(reports.PLAN_FORMATS)}"
        )
    with checkout(settings) as (tree, revision):
        result = specs.load_repository([tree], root=tree)
    if not result.ok:
        text = error_text(result)
        print(
            f"gitsync plan: revision {revision or '(working tree)'} is invalid; "
            f"nothing would be applied:\n{text}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    observed = wiring.observe(settings, credentials=TencentCredentials(settings, env))
    policy = planning.PlanPolicy(
        controller_id=common.controller_id,
        now=datetime.now(UTC),
        max_delete_ratio=common.max_delete_ratio,
        allow_mass_delete=common.allow_mass_delete,
        renew_before=common.renew_before,
        keep=keep_names(RecordFile(common.data_dir).load(), observed),
    )
    the_plan = planning.plan(
        result.desired(revision), observed, policy=policy, prices=common.prices
    )
    sizes = wiring.size_report(settings, the_plan)
    print(
        reports.format_plan(
            the_plan, output_format=output_format, provider=common.provider, sizes=sizes
        )
    )
    if sizes.has_errors:  # a cache that cannot hold its images fails after billing its build
        return EXIT_FAILED
    if settings.plan.detailed_exitcode:
        return EXIT_CHANGES if the_plan.has_changes else EXIT_OK
    return EXIT_OK


def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import reports, wiring
    from gitsync.controller_record import RecordFile
    from gitsync.digestrecord import ResolvedFile

    settings = command_settings(args, env)
    common = settings.common
    output_format = settings.text("--format", "text")
    record = RecordFile(common.data_dir).load()
    view = reports.StatusView(
        provider=common.provider,
        controller_id=common.controller_id,
        applied_revision=record.applied_revision,
        newest_revision=record.newest_revision,
        spec_valid=record.spec_valid,
        last_error=record.last_error,
        diagnostics=record.diagnostics,
        caches=wiring.observe(settings, credentials=TencentCredentials(settings, env)).caches,
        # What `gitsync run`'s tag refresher last resolved, as it saved it (none: held only).
        resolved=ResolvedFile(common.data_dir).load() or None,
    )
    print(reports.format_status(view, output_format=output_format))
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync.providers.base import CollectsGarbage, innermost

    settings = command_settings(args, env)
    if settings.common.provider != "local":
        raise ConfigError("gc: only the local backend keeps blobs; use --provider local")
    # 0 (the default): leases alone protect pulls in progress; a grace keeps young blobs too.
    grace = settings.resolver.duration("--grace", "0", allow_zero=True)
    provider = innermost(open_provider(settings, env, writable=False))
    try:
        if not isinstance(provider, CollectsGarbage):
            raise ConfigError("gc: only the local backend keeps blobs")
        done = provider.gc(grace_seconds=grace.total_seconds())
    finally:
        provider.close()
    print(
        f"removed {done.removed_blobs} blobs ({done.freed_bytes / 2**20:.1f} MiB), "
        f"kept {done.kept_blobs} ({done.leased_blobs} held by running pulls); "
        f"removed {done.removed_temp_files} stale temporary files; "
        f"dropped {done.dropped_leases} dead leases"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import logs, wiring
    from gitsync.datadir import DataDirLock

    settings = command_settings(args, env)
    common = settings.common
    heartbeat = wiring.heartbeat(settings)  # every setting of run checked before the lock
    # Then logging: a usage error must leave the process's (and a test's) logging alone.
    logs.configure(level=settings.logging.level, json_format=settings.logging.json_format)
    with DataDirLock(common.data_dir):
        # Bytes pulled are progress: a long first pull must not fail the liveness probe.
        provider = open_provider(
            settings, env, writable=True, on_progress=lambda _step: heartbeat.progress()
        )
        try:
            daemon = wiring.daemon(settings, provider=provider, heartbeat=heartbeat)
            scrub = wiring.scrubber(settings, provider=provider, metrics=daemon.metrics)
            signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
            signal.signal(signal.SIGINT, lambda *_: daemon.stop())
            if scrub is not None:
                scrub.start()
            try:
                daemon.run()
            finally:
                if scrub is not None:
                    scrub.stop()
        finally:
            provider.close()
    return EXIT_OK


def cmd_match(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import json

    from gitsync import matching
    from gitsync.providers.base import SuggestsCache, innermost

    settings = command_settings(args, env)
    output_format = settings.text("--format", "text")
    manual = settings.text("--cache") or None
    provider = open_provider(settings, env, writable=False)
    try:
        caches = provider.observe().caches
        cloud = None
        suggests = innermost(provider)
        if isinstance(suggests, SuggestsCache) and manual is None:
            # The cloud decides for real pods: show its answer beside ours.
            cloud = suggests.most_suitable(args.images)
    finally:
        provider.close()
    try:
        decision = matching.match(args.images, caches, manual=manual)
    except ValueError as exc:  # an ImageRefError is a ValueError
        raise ConfigError(str(exc)) from exc
    if output_format == "json":
        report = decision.to_json()
        if cloud is not None:
            report["cloud"] = {"id": cloud[0], "reason": cloud[1]}
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{decision.result.value}: {decision.cache or '-'} ({decision.cache_id or '-'}): "
            f"{decision.reason}"
        )
        for c in decision.candidates:
            print(
                f"  {c.name}  exact={c.exact} partial={c.partial} "
                f"imageCacheSize={c.image_cache_size_gib}"
            )
        if cloud is not None:
            print(f"cloud: {cloud[0] or 'no cache'}: {cloud[1]}")
    return EXIT_NO_MATCH if decision.result is matching.MatchResult.MISS else EXIT_OK


def cmd_export(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from gitsync import wiring
    from gitsync.providers.local.export import export_cache, parse_dest

    settings = command_settings(args, env)
    dest = parse_dest(settings.text("--dest"))
    provider = open_provider(settings, env, writable=False)
    try:
        store = wiring.image_store(provider)
        if store is None:
            raise ConfigError(
                "export: only the local backend holds image content; use --provider local"
            )
        done = export_cache(provider=store, name=args.name, dest=dest, link=bool(args.link))
    finally:
        provider.close()
    for image in done.images:
        print(f"{image.ref_name}  {image.manifest_digest}")
    print(
        f"exported {len(done.images)} images of {done.cache} to oci:{done.dest}: "
        f"{done.blobs_copied} blobs copied ({done.bytes_copied / 2**20:.1f} MiB), "
        f"{done.blobs_linked} linked, {done.blobs_present} already there, "
        f"in {done.seconds:.2f} s"
    )
    return EXIT_OK
