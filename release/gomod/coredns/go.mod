// corekube's build module for coredns: it requires github.com/coredns/coredns at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/coredns

go 1.26.0

require (
	github.com/coredns/coredns v1.15.0
)
