"""The facts every clip-serve process must agree on, written down once.

The exporter, the Triton models, the gateway, the launcher, the client and the Kubernetes kit all
read these modules instead of keeping their own copies:

- `models`: the Triton models (public ensembles and their steps) with their tensor names and types;
- `formats`: the image formats accepted and the signatures used to name the ones refused;
- `precisions`: each precision, how it is traced and compiled, its tolerances and CPU needs;
- `artifacts`: the file names inside an exported repository;
- `parameters`: the model-config parameters, each with one meaning;
- `encodings`: how embeddings travel in float16, int8 and binary (the gateway encodes, the client
  decodes);
- `similarity`: the prompt ensemble and the scaled cosine (Triton's similarity step computes with
  it, and so does the gateway for a Classify by label set id).

Standard library only, but for `encodings` and `similarity`, which need numpy (their readers have
it, and nothing imports them with the package): the exporter copies this package into every Python model of
a repository, so a Triton stub reads the same definitions as the processes that wrote and call it.
"""
