"""Model upload at link speed (issue 19, rows a, c, d), against the emulator with each Cloud Storage
connection capped like a real TCP stream (``--storage-mib-s``).

    python bench/upload.py [--cap 16] [--streams 8]

(a) 1 GiB as 20 files plus one 512 MiB file: ``upload_model`` vs one stream (the same files one
    after another, ``blob.upload_from_filename``) vs the bound size / (streams x cap);
(c) bytes re-sent after an interrupt at 50 % (every stream dropped at once), counted by the emulator;
(d) peak RSS of ``sdcluster upload-model`` of the 1 GiB model (a child process, ``ru_maxrss``).

Prints the rows and writes them into bench/RESULTS.md (section "Model upload at link speed").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import sdcluster
from helpers import MIB, SDCLUSTER, EmulatorProcess, measure_child, model_dir, replace_section, section_head
from sdcluster.gcp.clients import ClientFactory
from sdcluster.gcp.upload import UploadProgress, saved_model_files, upload_model

PROJECT, USER = "demo-proj", "user:demo@example.com"
RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "## Model upload at link speed"


def the_model() -> tuple[Path, Path]:
    """(1 GiB as 20 files, the same plus a 512 MiB file): hard links, made once."""
    small = model_dir(1024)
    both = Path("/tmp/bench_model_1536MiB")
    extra = both / "variables" / "variables.data-extra-512MiB"
    if not extra.exists() or extra.stat().st_size != 512 * MIB:
        for f in saved_model_files(small):
            target = both / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(f.path, target)
        with extra.open("wb") as out:
            for _ in range(8):
                out.write(os.urandom(64 * MIB))
    return small, both


def fresh(emu: EmulatorProcess) -> tuple[Any, ClientFactory]:
    factory = ClientFactory(user=USER, emulator=emu.address)
    cfg = sdcluster.Config.build(project=PROJECT, user=USER)
    factory.storage(PROJECT).create_bucket(cfg.bucket_name, location="us-central1")
    return cfg, factory


def received(emu: EmulatorProcess) -> int:
    from sdcluster.gcp.clients import control_call

    return sum(
        int(e.get("bytes_in") or 0) for e in control_call(emu.address, "Log", {}) if e["service"] == "storage"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cap", type=float, default=16.0, help="MiB/s per connection")
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()
    small, both = the_model()
    files = saved_model_files(both)
    total = sum(f.size for f in files)
    rows: list[str] = []
    knobs = {"storage_mib_s": args.cap}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the session journal goes to ./.sdcluster/uploads

        # (a) sdcluster vs one stream vs the bound
        with EmulatorProcess(project=PROJECT, owner=USER, **knobs) as emu:
            cfg, factory = fresh(emu)
            start = time.perf_counter()
            result = upload_model(cfg, both, factory=factory, max_workers=args.streams)
            ours = time.perf_counter() - start
        with EmulatorProcess(project=PROJECT, owner=USER, **knobs) as emu:
            cfg, factory = fresh(emu)
            bucket = factory.storage(PROJECT).bucket(cfg.bucket_name)
            start = time.perf_counter()
            for f in files:
                bucket.blob(f"one-stream/{f.name}").upload_from_filename(str(f.path))
            one = time.perf_counter() - start
        bound = total / MIB / (args.streams * args.cap)
        mib = total / MIB
        rows.append(
            f"| a | {mib:.0f} MiB (20 files = 1 GiB + one 512 MiB file), cap {args.cap:g} MiB/s per connection: "
            f"`upload_model` ({args.streams} streams) vs one stream | {one / ours:.2f}x | >= 4x | "
            f"{'pass' if one / ours >= 4 else 'FAIL'} | {ours:.2f} s ({mib / ours:.0f} MiB/s, {result.workers} threads, "
            f"{result.bytes_sent / MIB:.0f} MiB sent) vs {one:.2f} s ({mib / one:.1f} MiB/s) |"
        )
        rows.append(
            f"| a | the same: bound / `upload_model` | {bound / ours:.2f} | >= 0.8 | {'pass' if bound / ours >= 0.8 else 'FAIL'} | "
            f"bound {bound:.2f} s = {mib:.0f} MiB / ({args.streams} streams x {args.cap:g} MiB/s) |"
        )

        # (c) resume after an interrupt at 50 %
        with EmulatorProcess(project=PROJECT, owner=USER, **knobs) as emu:
            cfg, factory = fresh(emu)

            class Interrupted(Exception):
                pass

            def halfway(p: UploadProgress) -> None:
                if p.bytes_done >= total // 2:
                    raise Interrupted

            try:
                upload_model(cfg, both, factory=factory, max_workers=args.streams, progress=halfway)
            except Interrupted:
                pass
            first = received(emu)
            again = upload_model(cfg, both, factory=factory, max_workers=args.streams)
            everything = received(emu)
        resent = everything - total
        rows.append(
            f"| c | bytes re-sent after an interrupt at 50 % ({len(files)} files, {args.streams} streams in flight) | "
            f"{resent / MIB:.2f} MiB | <= one part per stream ({args.streams} x 32 MiB) | "
            f"{'pass' if resent <= args.streams * 32 * MIB else 'FAIL'} | the emulator received {first / MIB:.0f} MiB "
            f"before the interrupt and {(everything - first) / MIB:.0f} MiB on the rerun ({again.bytes_sent / MIB:.0f} MiB "
            f"counted by the client) of {mib:.0f} MiB |"
        )

        # (d) peak RSS of the 1 GiB upload through the CLI
        with EmulatorProcess(project=PROJECT, owner=USER, **knobs) as emu:
            fresh(emu)
            env = {"SDCLUSTER_EMULATOR": emu.address}
            subprocess.run(
                [SDCLUSTER, "init", "--project", PROJECT, "--user", USER],
                env={**os.environ, **env},
                check=True,
                stdout=subprocess.DEVNULL,
            )
            code, rss, wall = measure_child([SDCLUSTER, "upload-model", str(small), "--json"], env=env)
        rows.append(
            f"| d | peak RSS of `sdcluster upload-model` of the 1 GiB, 20-file model | {rss:.0f} MiB | < 300 MiB | "
            f"{'pass' if rss < 300 and code == 0 else 'FAIL'} | exit {code}, {wall:.1f} s at cap {args.cap:g} MiB/s per connection |"
        )

    command = f"python bench/upload.py --cap {args.cap:g} --streams {args.streams}"
    text = "\n".join(
        [
            SECTION,
            "",
            *section_head(command),
            *rows,
            "",
            "The cap is the emulator's `--storage-mib-s`: a token bucket per connection on request and response "
            "bodies, as a real TCP stream is capped by its window and round-trip time. One stream sends the files "
            "one after another, each in one streamed request; `upload_model` runs that many resumable sessions at "
            "once: the files, largest first, cut into as many lanes of equal bytes (a file that straddles two "
            "lanes goes up as two parts, large files in parts of at most 32 MiB, composed into one object), so "
            "the streams end together. Row c drops every stream at once when half the bytes are read; the rerun "
            "asks each journaled session how much it holds and sends the rest, and sends no part the journal "
            "records as finished.",
            "",
        ]
    )
    print(text)
    replace_section(RESULTS, SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
