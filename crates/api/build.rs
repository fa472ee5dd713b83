//! Generates the etcd v3 API from the .proto files in proto/ with protox, a pure-Rust
//! protobuf compiler, so building needs no system `protoc`; and concord's own peer
//! protocol from proto/concord.

fn main() {
    let protos = [
        "proto/etcd/api/authpb/auth.proto",
        "proto/etcd/api/etcdserverpb/rpc.proto",
        "proto/etcd/api/mvccpb/kv.proto",
        "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
        "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
        "proto/concord/peerpb/peer.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"]).expect("the .proto files compile");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)
        .expect("code generation succeeds");
}
