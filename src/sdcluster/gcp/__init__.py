"""The Google provider: the client factory (the one place clients and credentials are built), the
run context, the stack of resources for a configuration, and the model upload."""
