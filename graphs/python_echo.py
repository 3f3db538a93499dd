#!/usr/bin/env python3
"""A complete agentd worker in Python, standard library only.

Started as `python3 python_echo.py --property FILE` with the environment agentd gives every
worker (AGENTD_API_URL, AGENTD_WORKER_ID, AGENTD_AGENT_ID, AGENTD_CHAT_ID, NOTIFY_SOCKET, ...).
It says READY=1 once the API answers, then claims batches, streams the text back word by word,
and completes them. On SIGTERM it fails the batch in hand as retryable and exits 0.
"""

import argparse
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

API = os.environ.get("AGENTD_API_URL", "http://127.0.0.1:8080/api/v1").rstrip("/")
KEY = os.environ.get("AGENTD_API_KEY", "")
WORKER = os.environ.get("AGENTD_WORKER_ID") or "python-echo-%d" % os.getpid()
CHAT = os.environ.get("AGENTD_CHAT_ID", "")
CLAIM_AGENT = os.environ.get("AGENTD_CLAIM_AGENT_ID", "")
LEASE_MS = int(os.environ.get("AGENTD_LEASE_MS", "30000"))


class Stop(Exception):
    """Raised by the SIGTERM handler to leave whatever call is in progress."""


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body[:200]))
        self.status = status


def on_term(signum, frame):
    raise Stop()


def notify(state):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), path)
    except OSError as e:
        print("cannot notify %s: %s" % (state, e), file=sys.stderr)


def call(method, path, body=None, timeout=15):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if KEY:
        req.add_header("Authorization", "Bearer " + KEY)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            raw = res.read()
            return json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as e:
        raise HttpError(e.code, e.read().decode("utf-8", "replace"))


def load_graph(path):
    with open(path) as f:
        doc = json.load(f)
    for section, nodes_of in (("_ten", lambda g: g.get("nodes")), ("ten", lambda g: g.get("graph", {}).get("nodes"))):
        graphs = doc.get(section, {}).get("predefined_graphs") or []
        if graphs:
            return graphs[0].get("name", ""), nodes_of(graphs[0]) or []
    sys.exit("no graph in %s" % path)


def answer(batch, agent, prefix):
    chat = batch["chatId"]
    try:
        call("POST", "/chats/%s/typing" % chat, {"agentId": agent})
    except Exception:
        pass
    text = prefix + batch["compiledContent"]
    msg = call("POST", "/chats/%s/messages" % chat,
               {"role": "agent", "senderId": agent, "streaming": True, "modelId": agent,
                "trace": {"batchId": batch["batchId"]}})
    try:
        for word in re.findall(r"\S+\s*|\s+", text):
            call("POST", "/messages/%s/chunks" % msg["id"], {"deltaText": word})
        call("POST", "/messages/%s/complete" % msg["id"], {"finalText": text})
    except BaseException:
        try:
            call("POST", "/messages/%s/cancel" % msg["id"], timeout=1)
        except Exception:
            pass
        raise


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--property", required=True)
    args = parser.parse_args()
    graph, nodes = load_graph(args.property)
    prop = (nodes[0].get("property") if nodes else None) or {}
    prefix = prop.get("prefix", "")
    agent = os.environ.get("AGENTD_AGENT_ID") or graph
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    batch = None
    try:
        while True:
            try:
                call("GET", "/health", timeout=5)
                break
            except Exception:
                time.sleep(0.2)
        notify("READY=1")
        print("python_echo ready: agent %s, worker %s" % (agent, WORKER), file=sys.stderr, flush=True)
        claim = {"workerId": WORKER, "leaseMs": LEASE_MS, "waitMs": 25000}
        if CHAT:
            claim["chatId"] = CHAT
        elif CLAIM_AGENT:
            claim["agentId"] = CLAIM_AGENT
        while True:
            try:
                batch = call("POST", "/dispatch/claim", claim, timeout=40)
            except (HttpError, OSError) as e:
                print("claim failed: %s" % e, file=sys.stderr, flush=True)
                time.sleep(1)
                continue
            if not batch:
                continue
            me = agent if (CHAT or CLAIM_AGENT) else (batch.get("agentIdHint") or agent)
            try:
                answer(batch, me, prefix)
                call("POST", "/dispatch/%s/complete" % batch["batchId"], {"workerId": WORKER})
            except HttpError as e:
                if e.status != 409:  # 409: the lease is gone, drop the work
                    call("POST", "/dispatch/%s/fail" % batch["batchId"],
                         {"workerId": WORKER, "reason": str(e), "retryable": True})
            except OSError as e:
                print("answer failed: %s" % e, file=sys.stderr, flush=True)
            batch = None
    except Stop:
        notify("STOPPING=1")
        if batch is not None:
            try:
                call("POST", "/dispatch/%s/fail" % batch["batchId"],
                     {"workerId": WORKER, "reason": "the worker is stopping", "retryable": True,
                      "retryDelayMs": 0}, timeout=1)
            except Exception:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
