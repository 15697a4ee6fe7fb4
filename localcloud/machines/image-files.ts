/**
 * Files of the local cloud's machine image beyond its apt sources (apt-repo.ts): what a cloud image would
 * bring, here the deviations only this host needs (LOCAL_CLOUD_DEVIATIONS). The overlord never writes them, so
 * every redeploy keeps them.
 */
import { toYaml } from '../../core/yaml.ts';
import { LAYOUT } from '../../units/layout.ts';

/**
 * The kubelet drop-in: this host's cgroups are v1, which the kubelet refuses since 1.35 unless failCgroupV1
 * is false (kubernetes/kubernetes#134298). A real cloud's images (Flatcar, Ubuntu 22.04+) are cgroup v2.
 */
export function localCloudImageFiles(): { path: string; content: string }[] {
  return [
    {
      // this host's capability bounding set lacks CAP_SYS_RESOURCE: no process may lower an OOM score, which runc
      // does for every pod sandbox (-998); containerd then keeps each at least its own (rootless setups do the same)
      path: `${LAYOUT.containerdDropInDir}/50-localcloud.toml`,
      content: "# corekube local cloud only: this host cannot lower OOM scores (no CAP_SYS_RESOURCE)\nversion = 3\n\n[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n",
    },
    {
      path: `${LAYOUT.kubeletDropInDir}/50-localcloud.conf`,
      content: toYaml(
        { apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration', failCgroupV1: false },
        { header: '# corekube local cloud only: the host runs cgroup v1 (a real cloud\'s image is cgroup v2)' },
      ),
    },
  ];
}
