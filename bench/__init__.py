"""decompbench: compare ways of decomposing language-model activations into features.

Data flows one way: model -> activations -> method -> dictionary -> task -> result -> report.
"""

__version__ = "0.1.0"
