"""Trials as Ray tasks: each asks for --cpus-per-run CPUs and --gpus-per-run GPUs, and Ray places it.

Ray gives a GPU task its own CUDA_VISIBLE_DEVICES, so `--device auto` in the trial finds exactly
the GPU(s) it was given. A worker that dies (killed, node lost) makes Ray run the task again (up
to RETRIES times); the new attempt continues the trial's run folder from its last checkpoint.
Workers send progress events to a small actor (Inbox) that the driver empties while it waits.
"""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

import ray
from ray.exceptions import RayError, TaskCancelledError

from minicnn.sweep.trial import Outcome, run_trial
from minicnn.train.errors import TrainError

RETRIES = 3             # attempts after a lost worker, on top of the first
POLL_S = 0.5            # how often the driver looks for finished trials and progress events
STOP_S = 60             # how long Ctrl-C waits for running trials to save their epoch
CONNECT_S = 5           # how long an --address has to answer
DEFAULT_PORTS = {"ray": 10001, "": 6379}    # Ray client server, GCS


@ray.remote(num_cpus=0)
class Inbox:
    """Progress events from the trials, kept until the driver takes them."""

    def __init__(self):
        self.events = []

    def put(self, name: str, event: dict) -> None:
        self.events.append((name, event))

    def take(self) -> list:
        events, self.events = self.events, []
        return events


def _remote_trial(trial, folder, token, inbox, copy_back) -> Outcome:
    return run_trial(trial, folder, token, lambda name, event: inbox.put.remote(name, event), copy_back=copy_back)


def check_answers(address: str) -> None:
    """One line if nothing listens at host:port (ray.init would wait for minutes)."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme, 6379)
    except ValueError as error:
        raise TrainError(f"--address {address}: not host:port ({error})") from None
    if not host:
        raise TrainError(f"--address {address}: not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((host, port), timeout=CONNECT_S).close()
    except OSError as error:
        raise TrainError(f"--address {address} does not answer ({error.strerror or error}); "
                         f"is the cluster up (`ray start --head` prints its address)?") from None


class RayEngine:
    def __init__(self, options):
        self.options = options
        if options.address:
            check_answers(options.address)
        self.started = not ray.is_initialized()  # a notebook or a test may have connected already
        if self.started:
            try:
                ray.init(address=options.address, log_to_driver=False, logging_level="ERROR",
                         **({} if options.address else {"include_dashboard": False}))
            except Exception as error:  # noqa: BLE001 - ConnectionError, RuntimeError ...: all one line
                where = f"--address {options.address}" if options.address else "Ray did not start"
                raise TrainError(f"{where}: {(str(error).splitlines() or [''])[0]}") from None
        try:
            self._check_resources()
        except TrainError:
            self.close()
            raise

    def _check_resources(self) -> None:
        """Refuse a sweep whose trials no node could ever run (Ray would wait forever)."""
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        for kind, asked, flag in (("GPU", self.options.gpus_per_run, "--gpus-per-run"),
                                  ("CPU", self.options.cpus_per_run, "--cpus-per-run")):
            most = max((node.get(kind, 0) for node in nodes), default=0)
            if asked > most:
                raise TrainError(f"{flag} {asked:g}: no node of the cluster has that many {kind}s "
                                 f"(the most on one node: {most:g})")

    def run(self, plan, trials, report, record) -> None:
        inbox = Inbox.remote()
        task = ray.remote(_remote_trial).options(num_cpus=self.options.cpus_per_run,
                                                 num_gpus=self.options.gpus_per_run, max_retries=RETRIES)
        names = {task.remote(trial, plan.folder, plan.token, inbox, self.options.copy_back): trial.name
                 for trial in trials}
        pending = list(names)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                self._deliver(inbox, report)
                for ref in ready:
                    record(self._outcome(ref, names[ref]))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # running: a KeyboardInterrupt in the trial, which saves its epoch; queued: dropped
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=STOP_S)
            for ref in ready:
                record(self._outcome(ref, names[ref]))
            raise
        finally:
            ray.kill(inbox)

    @staticmethod
    def _deliver(inbox, report) -> None:
        for name, event in ray.get(inbox.take.remote()):
            report(name, event)

    @staticmethod
    def _outcome(ref, name: str) -> Outcome:
        try:
            return ray.get(ref)
        except TaskCancelledError:
            return Outcome(name, "interrupted")
        except RayError as error:  # the worker died RETRIES + 1 times, or Ray itself failed
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return Outcome(name, "failed", f"lost its worker {RETRIES + 1} times ({detail})".replace("|", "/"))

    def close(self) -> None:
        if self.started and ray.is_initialized():
            ray.shutdown()
