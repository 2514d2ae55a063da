"""Benchmark: one blob upload to the local registry with aiship's client (flows/distribution.py) and with oras-py.

    .venv/bin/python bench/registry_client.py [--mib 1024] [--rounds 2]

Both upload a file of `--mib` random bytes (a new one per upload, so the registry never has it
already), in one monolithic PUT, to the same repository of the local registry (`aiship local up`).
Each upload runs in a child process of its own, so that its peak memory (ru_maxrss) is its own.
Only the upload is timed: the file's sha256 is computed beforehand, as aiship's layer writer
already has it. oras-py comes with the `bench` extra (`make setup`).

Prints seconds, MiB/s and peak RSS per client and round, and writes bench/results/registry-client.json.
"""

from __future__ import annotations

import sys

# Run as a script, this folder comes first on sys.path; bench/platform.py would shadow `platform`.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 2**20
CLIENTS = ("distribution.py", "oras-py")


def random_file(path: Path, mib: int) -> str:
    """Writes `mib` MiB of random bytes; returns their sha256 digest."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(mib):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            f.write(chunk)
    return f"sha256:{digest.hexdigest()}"


def upload(client: str, path: Path, digest: str, repository: str) -> dict:
    """In this process: uploads `path` with `client`; returns seconds and peak RSS."""
    from flows.settings import use_local_prefect

    use_local_prefect()
    from flows.distribution import RegistryAPI
    from flows.registry import load_credentials
    from flows.settings import Settings

    credentials = load_credentials(Settings().registry_credentials_block)
    size = path.stat().st_size
    host, _, name = repository.partition("/")
    if client == "distribution.py":
        started = time.monotonic()
        with RegistryAPI(repository, credentials) as registry, path.open("rb") as f:
            assert registry.upload_blob(digest, size, f)
        seconds = time.monotonic() - started
    else:
        import oras.container
        import oras.provider

        ca = Path("/etc/docker/certs.d") / host / "ca.crt"  # the CA aiship's client trusts (`ca_bundle`)
        registry = oras.provider.Registry(hostname=host, tls_verify=str(ca), auth_backend="basic")
        registry.auth.set_basic_auth(credentials.username, credentials.password.get_secret_value())
        # oras-py sends each request without credentials first and answers the 401 with them; the
        # registry answers a large PUT's 401 before reading its body and closes the connection, so
        # without this header every upload over a few MiB fails (SSLEOFError).
        registry.session.headers.update(registry.auth.get_auth_header())
        container = oras.container.Container(f"{repository}:bench")
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
        started = time.monotonic()
        response = registry.upload_blob(str(path), container, layer)
        seconds = time.monotonic() - started
        assert response.status_code == 201, (response.status_code, response.text[:300])
    return {"seconds": round(seconds, 3), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="blob size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="uploads per client, alternating (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", nargs=4, metavar=("CLIENT", "PATH", "DIGEST", "REPOSITORY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        client, path, digest, repository = args.child
        print(json.dumps(upload(client, Path(path), digest, repository)))
        return

    from flows.settings import Settings, use_local_prefect

    use_local_prefect()
    repository = f"{Settings().registry_host}/aiship-bench-registry-client"
    rows: dict[str, list[dict]] = {c: [] for c in CLIENTS}
    with tempfile.TemporaryDirectory(prefix="aiship-bench-registry-client-") as work:
        for n in range(args.rounds):
            for client in CLIENTS:
                path = Path(work) / "blob"
                digest = random_file(path, args.mib)
                out = subprocess.run([sys.executable, __file__, "--child", client, str(path), digest, repository],
                                     capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"{client} failed:\n{out.stderr[-2000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["mib_per_s"] = round(args.mib / row["seconds"], 1)
                rows[client].append(row)
                print(f"round {n + 1} {client:16} {row['seconds']:7.2f} s  {row['mib_per_s']:7.1f} MiB/s  "
                      f"peak RSS {row['peak_rss_mib']:7.1f} MiB", flush=True)
                path.unlink()
    summary = {c: {"median_seconds": statistics.median(r["seconds"] for r in rows[c]),
                   "max_peak_rss_mib": max(r["peak_rss_mib"] for r in rows[c])} for c in CLIENTS}
    for client, s in summary.items():
        print(f"{client:16} median {s['median_seconds']:.2f} s, peak RSS {s['max_peak_rss_mib']:.0f} MiB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "registry-client.json").write_text(json.dumps(
        {"mib": args.mib, "rounds": rows, "summary": summary, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        indent=1) + "\n")


if __name__ == "__main__":
    main()
