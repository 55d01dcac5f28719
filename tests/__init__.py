"""The test suite (a package, so that tests.helpers and tests.conftest import alike everywhere)."""
