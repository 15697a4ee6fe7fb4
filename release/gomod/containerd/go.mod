// corekube's build module for containerd: it requires github.com/containerd/containerd/v2 at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/containerd

go 1.26.8

require github.com/containerd/containerd/v2 v2.3.7
