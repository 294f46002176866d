"""trainer: prepare skeleton datasets, train encoders with CrossGLG guidance, evaluate one-shot.

Never imports kbgen and never opens the knowledge-base database: its inputs are the prepared
store, the knowledge pack and a config.
"""

__version__ = "0.1.0"
