"""Tools built on the library: the benchmark, tables and plots. The library never imports them."""
