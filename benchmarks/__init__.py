"""Studies of the plugin, run from the repository root as ``python -m benchmarks.<study>``.

Not part of the installed package (the wheel ships ``terratorch_hsi_peft`` only); each study
writes its runs to a JSON-lines file (``--runs``) and its section of the docs (``--results-md``).

- Studies (each ``--help`` lists its options): ``protocol`` (accuracy: what SpectralGPT and its
  adapters add over the spectral path alone and an SVM, every choice on validation pixels),
  ``data_throughput``, ``efficiency``, ``layer_microbench``, ``product_scale``,
  ``scene_mapping``.
- Their shared parts: ``experiments`` (models and data built from the shipped
  ``configs/experiments`` files plus overrides), ``machine`` (the report's machine
  line), ``efficiency_measure``/``efficiency_report``/``efficiency_variants`` (the efficiency
  study's timing, report and variants).
- ``benchmarks.docgen``: the docs' generated sections (``sections``), and the generators of
  figures that come from the configs and the registry, not from a study's runs (``figures``,
  ``methods``).
- ``results/``: one current runs file per study, the one its docs section is built from;
  superseded runs files are out of the tree (git history keeps them).
"""
