"""sbm: score-based generative modelling as one reproducible, verified pipeline.

Modules (see ../shared/DESIGN.md): config, data, gmm, processes, nets, models, losses,
samplers, train, io, metrics. Stages in `stages/` are thin wrappers around them.
"""

__version__ = "0.1.0"
