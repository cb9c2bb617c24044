//! Circular doubly linked lists threaded through a fixed array of nodes.
//!
//! Nodes are `u32` indices. A list is named by a sentinel node that belongs to it; an unlinked
//! node, like an empty list's sentinel, points to itself. Every operation is O(1) and nothing is
//! allocated after [`LinkArena::new`].

#[derive(Clone, Copy, Debug)]
struct Link {
    previous: u32,
    next: u32,
}

pub(crate) struct LinkArena {
    links: Vec<Link>,
}

impl LinkArena {
    /// An arena of `node_count` unlinked nodes (`node_count` fits `u32`, checked by the caller).
    pub(crate) fn new(node_count: u32) -> Self {
        Self {
            links: (0..node_count)
                .map(|node| Link {
                    previous: node,
                    next: node,
                })
                .collect(),
        }
    }

    /// Bytes allocated for the links.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.links.capacity() * size_of::<Link>()
    }

    pub(crate) fn next(&self, node: u32) -> u32 {
        self.links[node as usize].next
    }

    pub(crate) fn is_linked(&self, node: u32) -> bool {
        self.next(node) != node
    }

    /// Links the unlinked `node` right after `sentinel` (at the front of its list).
    pub(crate) fn push_front(&mut self, sentinel: u32, node: u32) {
        let next = self.next(sentinel);
        self.link_between(sentinel, node, next);
    }

    /// Links the unlinked `node` right before `sentinel` (at the back of its list).
    pub(crate) fn push_back(&mut self, sentinel: u32, node: u32) {
        let previous = self.links[sentinel as usize].previous;
        self.link_between(previous, node, sentinel);
    }

    fn link_between(&mut self, previous: u32, node: u32, next: u32) {
        debug_assert!(!self.is_linked(node), "node {node} is already in a list");
        self.links[node as usize] = Link { previous, next };
        self.links[previous as usize].next = node;
        self.links[next as usize].previous = node;
    }

    /// Takes `node` out of its list (no effect on an unlinked node).
    pub(crate) fn unlink(&mut self, node: u32) {
        let Link { previous, next } = self.links[node as usize];
        self.links[previous as usize].next = next;
        self.links[next as usize].previous = previous;
        self.links[node as usize] = Link {
            previous: node,
            next: node,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(arena: &LinkArena, sentinel: u32) -> Vec<u32> {
        let mut nodes = Vec::new();
        let mut node = arena.next(sentinel);
        while node != sentinel {
            nodes.push(node);
            node = arena.next(node);
        }
        nodes
    }

    #[test]
    fn push_and_unlink_keep_order() {
        let sentinel = 4;
        let mut arena = LinkArena::new(5);
        arena.push_back(sentinel, 1);
        arena.push_back(sentinel, 2);
        arena.push_front(sentinel, 0);
        arena.push_back(sentinel, 3);
        assert_eq!(collect(&arena, sentinel), [0, 1, 2, 3]);
        arena.unlink(2);
        arena.unlink(0);
        assert!(!arena.is_linked(2));
        assert_eq!(collect(&arena, sentinel), [1, 3]);
        arena.unlink(2);
        assert_eq!(collect(&arena, sentinel), [1, 3]);
    }
}
