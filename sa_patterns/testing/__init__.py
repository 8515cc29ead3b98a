"""Test support for applications using sa_patterns: the pytest plugin lives in
:mod:`sa_patterns.testing.plugin` and is enabled automatically once the package is installed."""
