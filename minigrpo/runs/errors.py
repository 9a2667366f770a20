"""How a run says it has nothing to learn: a warning at the first step that taught nothing, and an
error when the first ``TrainConfig.stop_after_flat`` steps all did (``lm_setup.flat_message`` says why)."""


class NothingToLearnWarning(UserWarning):
    """A step taught nothing: every group's rewards were equal, or no completion was judged."""


class UnjudgedRewardWarning(UserWarning):
    """A reward component judged none of a step's completions (it returned None for every one)."""


class NothingToLearn(RuntimeError):
    """The run's first steps all taught nothing; the message gives the likely cause."""


class DiskFull(OSError):
    """No space left on the device while the run folder was being written; the message names the file and
    what to do (free space, then resume from the last checkpoint, or start again when there is none)."""


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGINT, SIGTERM) at a safe point (``runs/stop.py``).

    ``signal``: its name; ``step``: the last step completed (None: stopped before the first step);
    ``run_dir``: the run folder (None: none was made, or the one made was removed); ``checkpoint``: the name
    of the checkpoint to resume from (None: there is none). A BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` on the way swallows it."""

    def __init__(self, signal: str, step: int | None = None, run_dir=None, checkpoint: str | None = None):
        super().__init__(signal, step, run_dir, checkpoint)
        self.signal, self.step, self.run_dir, self.checkpoint = signal, step, run_dir, checkpoint


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is running out of memory: Python's MemoryError, torch's OutOfMemoryError (a GPU), or
    the CPU allocator's RuntimeError ("can't allocate memory")."""
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
        (isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()))
