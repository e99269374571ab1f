/** The gossipsub topic of a team's new shards. */
export function teamTopic (teamId: string): string {
  return `/permagent/team/${teamId}/shards/1`
}
