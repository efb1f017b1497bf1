// IDL of the thriftpy2 peer (thriftpy2_peer.py), loaded at run time with thriftpy2.load:
// nothing is generated.  The same two methods as every peer of the benchmark.
namespace py fastrpcbench

service Bench {
    i64 add(1: i64 a, 2: i64 b),
    binary echo(1: binary data),
}
