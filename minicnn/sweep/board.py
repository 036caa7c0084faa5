"""The live progress view: one line per trial (state, epoch, validation accuracy, img/s).

Trials report events as they go (`update`); the driver says how each ended (`finish`). With
progress bars on and stderr a terminal, each trial is a tqdm bar kept at its own line; otherwise
each event is one log line, which reads well in a redirected log.
"""
from __future__ import annotations

import sys

from tqdm import tqdm


class Board:
    def __init__(self, trials, progress=True, log=tqdm.write):
        """trials: the Trial objects of the sweep, in table order."""
        self.progress, self.log = progress, log
        self.attempts = {t.name: 0 for t in trials}
        self.bars = {}
        if progress and sys.stderr.isatty():  # bars in a redirected log would be \r and escape codes
            width = max(len(t.name) for t in trials)
            # the state text goes in tqdm's desc, placed after the bar (names hold no braces: see trial_name)
            self.bars = {t.name: tqdm(total=t.config.recipe.epochs, desc="waiting", position=i, leave=True,
                                      bar_format=f"{t.name.ljust(width)} {{n_fmt}}/{{total_fmt}} epochs "
                                                 "|{bar:20}| {desc}", dynamic_ncols=True)
                         for i, t in enumerate(trials)}

    def _show(self, name: str, text: str, epoch: int | None = None) -> None:
        if name not in self.bars:
            self.log(f"{name}: {text}")
            return
        bar = self.bars[name]
        if epoch is not None:
            bar.n = epoch
        bar.set_description_str(text)  # refreshes the bar

    def update(self, name: str, event: dict) -> None:
        """event: {'state': 'started', 'epoch', 'epochs', 'pid', 'host'} or an epoch's
        {'epoch', 'epochs', 'val_acc', 'images_per_s'}."""
        if event.get("state") == "started":
            self.attempts[name] = self.attempts.get(name, 0) + 1
            again = f" (attempt {self.attempts[name]})" if self.attempts[name] > 1 else ""
            where = f"from epoch {event['epoch']}" if event["epoch"] else "from the start"
            self._show(name, f"running{again} {where} on {event['host']} pid {event['pid']}", event["epoch"])
        else:
            self._show(name, f"epoch {event['epoch']}/{event['epochs']}, val {event['val_acc']:.2%}, "
                             f"{event['images_per_s']:.0f} img/s", event["epoch"])

    def finish(self, name: str, status: str, reason: str | None = None) -> None:
        self._show(name, f"failed: {reason}" if status == "failed" else status)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
