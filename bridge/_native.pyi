"""Type stubs of the compiled extension (native/src); keep in step with the #[pyfunction]s and #[pyclass]es."""

__version__: str
