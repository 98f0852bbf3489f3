"""gru: the command line and Python API around the Pulumi program in components/."""
