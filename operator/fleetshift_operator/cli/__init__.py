"""``kubectl fleetshift``: watch and steer Endpoint rollouts without reading YAML.

- ``view``: pure text views (tables, the status page, the live watch frame);
  no I/O and no clock, so other programs (the demo) import and print them.
- ``access``: the plugin's reads and annotation writes, through lightkube.
- ``invoke``: test requests to an endpoint, through the API server's service
  proxy or a direct URL.
- ``main``: the command line (the ``kubectl-fleetshift`` entry point).

Nothing here imports kopf, and nothing writes an Endpoint's spec: the
controls are the annotations ``controls.py`` reads.
"""
