// corekube's build module for etcd: it requires go.etcd.io/etcd/server/v3 at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/etcd

go 1.26.0

require (
	go.etcd.io/etcd/server/v3 v3.6.17
	go.etcd.io/etcd/etcdctl/v3 v3.6.17
	go.etcd.io/etcd/etcdutl/v3 v3.6.17
)
