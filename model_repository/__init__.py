"""The Triton model templates. Each model folder holds its config.pbtxt, its version folder `1/`
(what Triton runs) and, where the model has checkpoint- or deployment-dependent settings, a
`configure.py` that fills its slice of the config at export time (export/repository.py calls it).
`common/` holds the modules the exporter copies into every Python model's version folder."""
