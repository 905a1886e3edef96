"""Pure logic of the pipeline: no Faust, no network, no event loop; unit-tested on its own."""
