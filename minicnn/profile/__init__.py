"""Where the time of a training step would go on a GPU, measured without one. Launches are
recorded by minicnn.backends.recording (the one recording runtime).

    measure.py    what happens to each recorded launch: emulator counters or CUDA events
    static.py     the compiler's facts: registers, spills, shared memory, main-loop instruction mix
    gpus.py       the GPU table (gpus.json) and theoretical occupancy
    estimate.py   roofline bound and counter-based estimate per launch (the model)
    step.py       one profiled training step of a zoo network
    report.py     the tables; commands.py: `minicnn profile`
"""
