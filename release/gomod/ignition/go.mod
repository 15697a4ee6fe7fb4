// corekube's build module for ignition: it requires github.com/coreos/ignition/v2 at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/ignition

go 1.26.0

require (
	github.com/coreos/ignition/v2 v2.24.0
)
