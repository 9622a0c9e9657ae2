"""Studies of the plugin, run from the repository root as ``python -m benchmarks.<study>``.

Not part of the installed package (the wheel ships ``terratorch_hsi_peft`` only); each study
writes its runs to a JSON-lines file (``--runs``) and its section of the docs (``--results-md``).

- Studies (each ``--help`` lists its options): ``accuracy``, ``data_throughput``, ``efficiency``,
  ``layer_microbench``, ``path_diagnosis``, ``pretrain_then_tune``, ``recipe_study``,
  ``scene_mapping``, ``segmentation_study``.
- Their shared parts: ``hsi_models`` (models, data checks), ``machine`` (the report's machine
  line), ``efficiency_measure``/``efficiency_report``/``efficiency_variants`` (the efficiency
  study's timing, report and variants).
- ``benchmarks.docgen``: the docs' generated sections (``sections``), and the generators of
  figures that come from the configs and the registry, not from a study's runs (``figures``,
  ``methods``).
- ``results/``: one current runs file per study, the one its docs section is built from;
  superseded runs files are cited in the docs by the commit that last held them.
"""
