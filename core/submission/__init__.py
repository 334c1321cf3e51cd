"""From runs to a results tree that MLCommons' submission checker accepts (issue #15).

``rules`` the layout and required fields of each round; ``truncate`` the accuracy-log truncation;
``test01`` the TEST01 verification; ``sysdesc`` the system description; ``select`` which runs are
staged; ``stage`` the tree; ``check`` the pre-check and the official checker; ``command`` the
``unet3d submission`` subcommands. Per-run rules live in core.compliance.
"""
