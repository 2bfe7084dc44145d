from tests.conftest import docs, model  # noqa: F401  (the real model and corpus, loaded once)
