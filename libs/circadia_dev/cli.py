"""``circadia``: run the local stack and talk to it.

  circadia up              start Kafka and the three services in the background
                           (--fanout-replicas N: N fan-out gateways on consecutive ports)
  circadia down            stop everything ``up`` started
  circadia status          what is running
  circadia init            topics and dev keys on an external broker (docker compose)
  circadia token USER_ID   print an ID token the local stack accepts
  circadia demo            simulated devices upload a day; apps print what arrives
  circadia dlq list|replay inspect the dead-letter topic, re-publish after a fix
  circadia erase USER_ID   erase a user: destroy the user's key, tell the services, audit it
  circadia trace TRACE_ID  print an upload's trace (the 202's trace_id) from Jaeger
  circadia config check    the services' effective configuration and every problem
  circadia worker rewind   process skipped uploads again (the worker stopped)

The operator commands also ship in every image, without this package: ``circadia-ops dlq|erase``
(the library's), ``python -m prediction_worker rewind`` and ``python -m <service> check-config``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import subprocess
import sys

from circadia_dev.devstack.processes import LaunchError
from circadia_dev.devstack.stack import LocalStack


def _up(stack: LocalStack, args: argparse.Namespace) -> int:
    stack = dataclasses.replace(stack, fanout_replicas=args.fanout_replicas)
    try:
        stack.up()
    except LaunchError as exc:
        print(f"circadia up failed: {exc}\n(stop what did start with `circadia down`)", file=sys.stderr)
        return 1
    p = stack.ports
    fanout = "\n                   ".join(f"ws://127.0.0.1:{port}/v1/stream" for _, port in stack.fanout_gateways())
    print(f"""
circadia is up (state and logs in {stack.root})
  ingest gateway   http://127.0.0.1:{p.ingest}/v1/uploads   (/healthz /readyz /metrics)
  fan-out gateway  {fanout}       (/healthz /readyz /metrics)
  worker metrics   http://127.0.0.1:{p.worker_metrics}/metrics
  kafka            {stack.bootstrap_servers}
  jaeger           {stack.jaeger.query_url}/api/traces/<trace id>   (circadia trace <trace id>)
  prometheus       {stack.prometheus.url}   (alert rules: deploy/prometheus/alerts.yml)
  a token:         circadia token <user_id>
  stop it all:     circadia down""")
    return 0


def _down(stack: LocalStack, args: argparse.Namespace) -> int:
    stopped = stack.down()
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _status(stack: LocalStack, args: argparse.Namespace) -> int:
    rows = stack.status()
    for name, pid in rows:
        print(f"{name:<18} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0 if all(pid for _, pid in rows) else 3


def _init(stack: LocalStack, args: argparse.Namespace) -> int:
    """Topics, the development token issuer and, with CIRCADIA_USER_KEYS_ADDR, the key service
    (initialised and unsealed, transit mounted, a token per service), for a broker and a key
    service ``up`` does not manage (compose)."""
    from circadia.kafka import ensure_topics

    created = asyncio.run(ensure_topics(stack.bootstrap_servers))
    print(f"topics: {', '.join(created) or 'all present'}; dev issuer certificates: {stack.issuer.certs_url}")
    if stack.external_openbao:
        stack.start_keys()
        print(f"key service: {stack.external_openbao} unsealed, transit mounted, service tokens issued")
    return 0


def _dlq(stack: LocalStack, args: argparse.Namespace) -> int:
    from circadia.ops import dead_letters

    return dead_letters(stack.bootstrap_servers, args.action, args.since)


def _worker(stack: LocalStack, args: argparse.Namespace) -> int:
    """The worker's own command (``python -m prediction_worker rewind``) against this broker."""
    command = [sys.executable, "-m", "prediction_worker", "rewind", "--bootstrap-servers", stack.bootstrap_servers,
               "--partition", str(args.partition), "--offset", str(args.offset)]
    # the local stack's broker is plaintext; a shell that names another protocol keeps it
    env = {"CIRCADIA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", **os.environ}
    return subprocess.run(command + (["--group", args.group] if args.group else []), env=env, check=False).returncode


SETTINGS = {"ingest-gateway": "ingest_gateway", "prediction-worker": "prediction_worker",
            "fanout-gateway": "fanout_gateway"}


def _config(stack: LocalStack, args: argparse.Namespace) -> int:
    """Each service's ``python -m <service> check-config`` (circadia.ops.check_config) from this
    environment; non-zero when a service would refuse to start or its settings are invalid."""
    failed = False
    for service in [args.service] if args.service else list(SETTINGS):
        failed |= subprocess.run([sys.executable, "-m", SETTINGS[service], "check-config"], check=False).returncode != 0
    return 1 if failed else 0


def _trace(stack: LocalStack, args: argparse.Namespace) -> int:
    """Print one trace from Jaeger as a tree: service, operation, start offset, duration."""
    import httpx

    response = httpx.get(f"{stack.jaeger.query_url}/api/traces/{args.trace_id}", timeout=10)
    if response.status_code != 200 or not response.json().get("data"):
        print(f"trace {args.trace_id} not found in Jaeger ({response.status_code})", file=sys.stderr)
        return 1
    (trace,) = response.json()["data"]
    spans = {span["spanID"]: span for span in trace["spans"]}
    children: dict[str | None, list[dict]] = {}
    for span in spans.values():
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        parent = parents[0] if parents and parents[0] in spans else None
        children.setdefault(parent, []).append(span)
    origin = min(span["startTime"] for span in spans.values())

    def show(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            service = trace["processes"][span["processID"]]["serviceName"]
            print(f"{'  ' * depth}{service:<18} {span['operationName']:<40} "
                  f"+{(span['startTime'] - origin) / 1000:8.1f} ms  {span['duration'] / 1000:7.1f} ms")
            show(span["spanID"], depth + 1)

    show(None, 0)
    return 0


def _token(stack: LocalStack, args: argparse.Namespace) -> int:
    print(stack.issuer.mint(args.user_id, ttl=args.ttl))
    return 0


def _demo(stack: LocalStack, args: argparse.Namespace) -> int:
    from circadia_dev.demo import run_demo

    if not all(pid for _, pid in stack.status()):
        print("the local stack is not (fully) running: start it with `circadia up`", file=sys.stderr)
        return 1
    p = stack.ports
    ok = asyncio.run(run_demo(stack.issuer, f"http://127.0.0.1:{p.ingest}",
                              f"ws://127.0.0.1:{p.fanout}/v1/stream"))
    print(f"""
where to look:
  results page     http://127.0.0.1:{p.fanout}/app/   sign in with the token of: circadia token demo-ada
  metrics          http://127.0.0.1:{p.ingest}/metrics  http://127.0.0.1:{p.worker_metrics}/metrics  http://127.0.0.1:{p.fanout}/metrics
  service logs     {stack.root / 'logs'}
  your own client  connect to ws://127.0.0.1:{p.fanout}/v1/stream and send {{"type": "auth", "token": "$(circadia token demo-ada)"}}
  stop the stack   circadia down""")  # noqa: E501  (the printed lines are wider than the code's)
    return 0 if ok else 1


def _erase(stack: LocalStack, args: argparse.Namespace) -> int:
    """An operator's erasure (circadia.ops): the key service of CIRCADIA_USER_KEYS_ADDR with the
    operator's CIRCADIA_USER_KEYS_TOKEN, or the local stack's own with its root token."""
    import hvac

    from circadia.ops import erase_user
    from circadia.userkeys import UserKeys

    address, token = os.environ.get("CIRCADIA_USER_KEYS_ADDR"), os.environ.get("CIRCADIA_USER_KEYS_TOKEN")
    try:
        client = hvac.Client(url=address, token=token, timeout=5) if address and token else stack.openbao.admin()
    except LaunchError as exc:
        print(f"no key service: set CIRCADIA_USER_KEYS_ADDR and CIRCADIA_USER_KEYS_TOKEN, or run circadia up ({exc})",
              file=sys.stderr)
        return 1
    return erase_user(stack.bootstrap_servers, UserKeys(client), args.user_id, service="circadia-cli")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="circadia", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the local stack")
    up.add_argument("--fanout-replicas", type=_positive, default=int(os.environ.get("CIRCADIA_FANOUT_REPLICAS", "1")),
                    help="fan-out gateways to start, on consecutive ports from 8081 (default 1, "
                         "or CIRCADIA_FANOUT_REPLICAS)")
    up.set_defaults(run=_up)
    commands.add_parser("down", help="stop the local stack").set_defaults(run=_down)
    commands.add_parser("status", help="show what runs").set_defaults(run=_status)
    commands.add_parser("init", help="create topics and dev keys for an external broker (compose)"
                        ).set_defaults(run=_init)
    token = commands.add_parser("token", help="mint an ID token for the local stack")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(run=_token)
    commands.add_parser("demo", help="simulate devices and apps").set_defaults(run=_demo)
    config = commands.add_parser("config", help="check the configuration the services would start with")
    config.add_argument("action", choices=["check"])
    config.add_argument("--service", choices=list(SETTINGS))
    config.set_defaults(run=_config)
    trace = commands.add_parser("trace", help="print one trace from the local Jaeger")
    trace.add_argument("trace_id")
    trace.set_defaults(run=_trace)
    erase_user = commands.add_parser("erase", help="erase a user's data (destroy the user's key)")
    erase_user.add_argument("user_id")
    erase_user.set_defaults(run=_erase)
    dlq = commands.add_parser("dlq", help="list or replay the dead-letter topic")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--since", help="only dead letters at or after this time (ISO 8601 with offset); "
                                     "replay then resends them even if replayed before")
    dlq.set_defaults(run=_dlq)
    worker = commands.add_parser("worker", help="rewind the worker to process skipped uploads (worker stopped)")
    worker.add_argument("action", choices=["rewind"])
    worker.add_argument("--partition", type=int, required=True, help="partition of health.samples.v1")
    worker.add_argument("--offset", type=int, required=True, help="first offset to process again")
    worker.add_argument("--group", help="the worker's consumer group (default: CIRCADIA_WORKER_APP_ID's default)")
    worker.set_defaults(run=_worker)
    args = parser.parse_args(argv)
    # Start-up probes expect refused connections and report failures themselves.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stack = LocalStack.default()
    if args.command in ("init", "dlq", "worker", "erase") and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        keys = os.environ.get("CIRCADIA_USER_KEYS_ADDR") if args.command == "init" else None
        stack = LocalStack(stack.root, external_kafka=os.environ["KAFKA_BOOTSTRAP_SERVERS"], external_openbao=keys)
    return int(args.run(stack, args))


if __name__ == "__main__":
    sys.exit(main())
