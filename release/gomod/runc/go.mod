// corekube's build module for runc: it requires github.com/opencontainers/runc at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/runc

go 1.26.0

require (
	github.com/opencontainers/runc v1.4.4
)
