// corekube's build module for flannel: it requires github.com/flannel-io/flannel at the pinned version and builds its programs
// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.
module corekube.build/flannel

go 1.26.0

require (
	github.com/flannel-io/flannel v0.28.10
)

replace (
	github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc => ./tencentcloud-vpc
)
