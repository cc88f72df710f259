"""The test suite (a package, so that `tests.conftest` never resolves to another distribution's `tests`)."""
