"""The planner's stages, in the order ``transforms.reconcile.reconcile`` runs them (and a reader needs them).

| stage                              | module        | rules                                   |
| ---------------------------------- | ------------- | --------------------------------------- |
| prepare users, windows and events  | prepare       | C1, R2, R6/C2, R15/C17                  |
| look up the stored pairs by id     | lookup        | R3, C17                                 |
| detect changes                     | changes       | R7, R13/C11                             |
| settle deletions; the guard        | deletions     | R6, R8/C8, C15, C17; C9                 |
| the pool and its blocked keys      | pool          | R3, R4/C4, R5/C5, C15, C19              |
| group events                       | groups        | R13/C15                                 |
| creations                          | creations     | R5, R14/C16, C15, C18, C19              |
| settle changes and conflicts       | settle        | R7, C6, C7, R9/C10, C15                 |
| invitees, Who, payload, limits     | shape         | R9/C10, R10-R12, C11-C14, C19, C7       |
| which writes, which notes          | writes        | C7, C6, C19, R7                         |
| guard applied, refresh, delta ids  | finish, ids   | C9, R7                                  |

Rule ids are defined in docs/rules.md. ``frames`` names what the stages hand each other; ``positions`` holds
the row-position devices that keep the planner fast; ``common`` the small shared expressions.
"""
