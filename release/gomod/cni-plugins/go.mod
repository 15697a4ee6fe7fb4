// corekube's build module for cni-plugins: it requires github.com/containernetworking/plugins at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/cni-plugins

go 1.26.8

require github.com/containernetworking/plugins v1.10.0
