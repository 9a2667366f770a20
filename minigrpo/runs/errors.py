"""How a run says it has nothing to learn: a warning at the first step that taught nothing, and an
error when the first ``TrainConfig.stop_after_flat`` steps all did (``lm_setup.flat_message`` says why)."""


class NothingToLearnWarning(UserWarning):
    """A step taught nothing: every group's rewards were equal, or no completion was judged."""


class NothingToLearn(RuntimeError):
    """The run's first steps all taught nothing; the message gives the likely cause."""
