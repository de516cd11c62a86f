"""Keras callbacks for generative training.

Callbacks here (sample grids, EMA of weights, gradient monitoring, periodic
evaluation) talk to zoo models only through the model protocol, never through a
family's internals. They land with the callbacks work; the package is empty
until then.
"""

__all__ = []
