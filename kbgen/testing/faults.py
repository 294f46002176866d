"""Fault injection for the fake OpenAI-compatible server: rate limits, outages, hangs, bad answers.

:class:`FaultInjector` is a ``responder`` for :class:`~kbgen.testing.fake_openai.FakeOpenAIServer`
(one server implementation; this module only decides what each answer is). At ``rate`` it turns
a request into one of :data:`FAULT_KINDS`, chosen uniformly among the enabled kinds; otherwise it
answers validly. It counts what it did, so a test can check that every injected fault became
exactly one failed attempt in ``kbgen logs``.

Run a faulty endpoint by hand (and point ``kbgen generate --base-url`` at it)::

    python -m kbgen.testing.faults --rate 0.3 --port 8321
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kbgen.testing.fake_openai import FakeOpenAIServer, Reply, answer_from_schema, schema_of

# Transport faults: the client must retry them (HTTP 429 with Retry-After, 5xx, timeout, reset).
TRANSPORT_FAULTS = ("rate_limit", "server_error", "unavailable", "hang", "reset")
# Answer faults: HTTP 200 with an answer the validator must refuse, so the client asks again.
ANSWER_FAULTS = (
    "malformed_json",
    "missing_joint",
    "extra_joint",
    "duplicate_joint",
    "empty_joint",
    "refusal",
    "truncated",
)
FAULT_KINDS = TRANSPORT_FAULTS + ANSWER_FAULTS
# Text of every valid answer; bad answers carry INJECTED so a test can prove none was stored.
VALID_TEXT = "It moves steadily during the action."
INJECTED = "INJECTED"


@dataclass(frozen=True)
class FaultPlan:
    """What to inject and how often.

    Args:
        rate: probability that a request gets a fault.
        kinds: the fault kinds to draw from (uniformly); default all of :data:`FAULT_KINDS`.
        delay_s: delay before every answer, faulty or not (a stand-in for generation time).
        hang_s: how long a "hang" keeps the request open: set it above the client's timeout.
        retry_after_s: the ``Retry-After`` header of a 429, in whole seconds.
        seed: seed of the fault draws (the order still depends on thread scheduling).
    """

    rate: float = 0.3
    kinds: tuple[str, ...] = FAULT_KINDS
    delay_s: float = 0.0
    hang_s: float = 2.0
    retry_after_s: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}: use {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, not {self.rate}")
        if self.rate > 0 and not self.kinds:
            raise ValueError("a positive fault rate needs at least one fault kind")


class FaultInjector:
    """A responder that answers validly or with a fault drawn from a :class:`FaultPlan`; thread-safe."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self.requests = 0
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(self.plan.seed)
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests += 1
            kind = None
            if self.plan.kinds and self._rng.random() < self.plan.rate:
                kind = self._rng.choice(self.plan.kinds)
                self.injected[kind] += 1
        if kind is None:
            return Reply(content=json.dumps(_valid_answer(request)), delay_s=self.plan.delay_s)
        return self._fault(kind, _valid_answer(request))

    def fault_reply(self, kind: str, request: dict[str, Any]) -> Reply:
        """The reply of fault ``kind`` to ``request``, counted as injected (tests force one kind)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind}: use {', '.join(FAULT_KINDS)}")
        with self._lock:
            self.requests += 1
            self.injected[kind] += 1
        return self._fault(kind, _valid_answer(request))

    @property
    def faults(self) -> int:
        """Faults injected so far, all kinds."""
        return sum(self.injected.values())

    def stats(self) -> dict[str, Any]:
        """Requests seen and faults injected by kind (every kind listed, zeros included)."""
        with self._lock:
            return {
                "requests": self.requests,
                "faults": sum(self.injected.values()),
                "by_kind": {kind: self.injected[kind] for kind in FAULT_KINDS},
            }

    def _fault(self, kind: str, answer: dict[str, Any]) -> Reply:
        plan = self.plan
        delay = plan.delay_s
        if kind == "rate_limit":
            return Reply(
                status=429,
                error="rate limit reached, slow down",
                headers={"Retry-After": str(plan.retry_after_s)},
                delay_s=delay,
            )
        if kind == "server_error":
            return Reply(status=500, error="internal server error", delay_s=delay)
        if kind == "unavailable":
            return Reply(status=503, error="model overloaded", delay_s=delay)
        if kind == "hang":
            return Reply(content=json.dumps(answer), delay_s=plan.hang_s)
        if kind == "reset":
            return Reply(reset_connection=True, delay_s=delay)
        if kind == "refusal":
            return Reply(refusal=f"{INJECTED}: I can't help with that request.", delay_s=delay)
        return Reply(content=corrupt_answer(kind, answer), delay_s=delay, finish_reason=_finish(kind))

    def __repr__(self) -> str:
        return f"FaultInjector(rate={self.plan.rate}, injected={dict(self.injected)})"


def _valid_answer(request: dict[str, Any]) -> dict[str, Any]:
    schema = schema_of(request)
    return answer_from_schema(schema, VALID_TEXT) if schema else {}


def _finish(kind: str) -> str:
    return "length" if kind == "truncated" else "stop"


def corrupt_answer(kind: str, answer: dict[str, Any]) -> str:
    """The raw text of a bad answer of ``kind``, built from a valid ``answer`` object.

    A joint answer (keys are joint names) loses, gains, repeats or empties a joint; a global answer
    (``key_body_parts`` + ``description``) gets the same damage to its own keys.
    """
    keys = list(answer)
    is_global = "description" in answer
    target = "description" if is_global else (keys[len(keys) // 2] if keys else "head")
    valid_text = json.dumps(answer)
    if kind == "malformed_json":
        return f"Sure! Here is the JSON you asked for: {{'{target}': {INJECTED}"
    if kind == "missing_joint":
        return json.dumps({k: v for k, v in answer.items() if k != target})
    if kind == "extra_joint":
        extra = "confidence" if is_global else "tail"
        return json.dumps({**answer, extra: f"{INJECTED} extra"})
    if kind == "duplicate_joint":
        # json.dumps cannot repeat a key: append the repeat to the object's text by hand.
        return valid_text[:-1] + f', "{target}": "{INJECTED} again"}}'
    if kind == "empty_joint":
        return json.dumps({**answer, target: ""})
    if kind == "truncated":
        return valid_text[: max(1, len(valid_text) // 2)]
    raise ValueError(f"not an answer fault: {kind}")


def main(argv: list[str] | None = None) -> None:
    """Serve a faulty endpoint on 127.0.0.1 until Ctrl-C or SIGTERM, then print what was injected."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rate", type=float, default=0.3, help="fault probability per request")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--hang", type=float, default=2.0, help="seconds a hang lasts (> client timeout)")
    parser.add_argument("--kinds", default=",".join(FAULT_KINDS), help="comma-separated fault kinds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        plan = FaultPlan(
            rate=args.rate,
            kinds=tuple(k for k in args.kinds.split(",") if k),
            delay_s=args.delay,
            hang_s=args.hang,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    injector = FaultInjector(plan)
    # Stop on SIGTERM like on Ctrl-C (a server started in the background ignores SIGINT).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with FakeOpenAIServer(responder=injector, port=args.port) as server:
        print(f"faulty OpenAI-compatible endpoint at {server.base_url} (fault rate {plan.rate})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    print(json.dumps(injector.stats(), indent=2))


if __name__ == "__main__":
    main()
