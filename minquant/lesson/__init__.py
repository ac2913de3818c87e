"""The lesson and the app: the ``minquant`` command (``cli``, ``cli_models``, ``doctor``), the Day-2 demo
(``demo``, ``report``, ``render``), offline data and models (``datasets``, ``zoo``, ``training``, ``timing``) and
the golden-recording tool (``golden``). The top layer: it may import everything below it."""
