"""The plumbing that training, the flow and the benchmarks share, and no stage of its own: the console scripts'
contract (`cli`), settings as flags (`settings`), the install's extras (`extras`), atomic files (`files`), object
storage behind one path type (`storage`) and ranged reads from servers that answer them whole (`partial`)."""
