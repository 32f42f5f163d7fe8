"""The terminal: the ``sdcluster`` command line (typer), rendering (rich) and the demo. The only
package that prints; it calls the library surface (``sdcluster.api``)."""
