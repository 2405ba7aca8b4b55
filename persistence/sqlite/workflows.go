package sqlite

import (
	"context"
	"encoding/json"

	"github.com/weftdev/weft/persistence"
)

// CreateWorkflow stores w as version 1, the head row and the version row in
// one transaction.
func (s *Store) CreateWorkflow(ctx context.Context, w *persistence.Workflow) error {
	w.Version = 1
	w.CreatedAt = s.stamp(w.CreatedAt)
	w.UpdatedAt = w.CreatedAt
	return s.do(ctx, func(t *wtx) error {
		_, err := t.exec(
			`INSERT INTO workflows (id, user_id, name, description, version, created_at, updated_at)
			 VALUES (?, ?, ?, ?, 1, ?, ?)`,
			w.ID, w.UserID, w.Name, w.Description, toMillis(w.CreatedAt), toMillis(w.UpdatedAt))
		if err != nil {
			return constraint(err, "workflow")
		}
		return insertVersion(t, w)
	})
}

func insertVersion(t *wtx, w *persistence.Workflow) error {
	_, err := t.exec(
		`INSERT INTO workflow_versions (workflow_id, version, name, description, definition, created_at)
		 VALUES (?, ?, ?, ?, ?, ?)`,
		w.ID, w.Version, w.Name, w.Description, string(w.Definition), toMillis(w.UpdatedAt))
	if err != nil {
		return constraint(err, "workflow version")
	}
	return nil
}

// workflowSelect reads a head row joined to one of its versions.
const workflowSelect = `
SELECT w.id, w.user_id, v.name, v.description, v.version, v.definition, w.created_at, v.created_at
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id `

func scanWorkflow(row interface{ Scan(...any) error }) (persistence.Workflow, error) {
	var (
		w                persistence.Workflow
		def              string
		created, updated int64
	)
	err := row.Scan(&w.ID, &w.UserID, &w.Name, &w.Description, &w.Version, &def, &created, &updated)
	w.Definition = json.RawMessage(def)
	w.CreatedAt = fromMillis(created)
	w.UpdatedAt = fromMillis(updated)
	return w, err
}

// GetWorkflow returns the latest version of a live workflow.
func (s *Store) GetWorkflow(ctx context.Context, userID, id string) (*persistence.Workflow, error) {
	w, err := scanWorkflow(s.read.QueryRowContext(ctx, workflowSelect+
		`AND v.version = w.version WHERE w.id = ? AND w.user_id = ? AND w.deleted = 0`, id, userID))
	if err != nil {
		return nil, notFound(err, "workflow")
	}
	return &w, nil
}

// GetWorkflowVersion returns one version, deleted workflow or not.
func (s *Store) GetWorkflowVersion(ctx context.Context, userID, id string, version int) (*persistence.Workflow, error) {
	w, err := scanWorkflow(s.read.QueryRowContext(ctx, workflowSelect+
		`AND v.version = ? WHERE w.id = ? AND w.user_id = ?`, version, id, userID))
	if err != nil {
		return nil, notFound(err, "workflow version")
	}
	return &w, nil
}

// UpdateWorkflow appends the next version in one write transaction; the
// single writer serializes racing updates, so each gets its own
// consecutive version.
func (s *Store) UpdateWorkflow(ctx context.Context, w *persistence.Workflow) error {
	var next persistence.Workflow
	err := s.do(ctx, func(t *wtx) error {
		var current, created int64
		err := t.queryRow(
			`SELECT version, created_at FROM workflows WHERE id = ? AND user_id = ? AND deleted = 0`,
			w.ID, w.UserID).Scan(&current, &created)
		if err != nil {
			return notFound(err, "workflow")
		}
		next = persistence.Workflow{
			ID: w.ID, UserID: w.UserID, Name: w.Name, Description: w.Description,
			Definition: w.Definition, Version: int(current) + 1,
			CreatedAt: fromMillis(created), UpdatedAt: s.stamp(s.now()),
		}
		if err := insertVersion(t, &next); err != nil {
			return err
		}
		_, err = t.exec(
			`UPDATE workflows SET name = ?, description = ?, version = ?, updated_at = ? WHERE id = ?`,
			next.Name, next.Description, next.Version, toMillis(next.UpdatedAt), next.ID)
		if err != nil {
			return internal(err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.Version, w.CreatedAt, w.UpdatedAt = next.Version, next.CreatedAt, next.UpdatedAt
	return nil
}

// ListWorkflows pages through live workflows by id, newest first. It asks
// for one row more than the page to learn whether another page exists.
func (s *Store) ListWorkflows(ctx context.Context, userID string, p persistence.Page) ([]persistence.Workflow, string, error) {
	limit := persistence.PageLimit(p.Limit)
	rows, err := s.read.QueryContext(ctx, workflowSelect+
		`AND v.version = w.version
		 WHERE w.user_id = ? AND w.deleted = 0 AND (? = '' OR w.id < ?)
		 ORDER BY w.id DESC LIMIT ?`, userID, p.Cursor, p.Cursor, limit+1)
	if err != nil {
		return nil, "", internal(err)
	}
	defer func() { _ = rows.Close() }()
	list := make([]persistence.Workflow, 0, limit)
	more := false
	for rows.Next() {
		if len(list) == limit {
			more = true
			break
		}
		w, err := scanWorkflow(rows)
		if err != nil {
			return nil, "", internal(err)
		}
		list = append(list, w)
	}
	if err := rows.Err(); err != nil {
		return nil, "", internal(err)
	}
	if !more {
		return list, "", nil
	}
	return list, list[len(list)-1].ID, nil
}

// DeleteWorkflow hides the workflow but keeps its versions, which past
// executions still name.
func (s *Store) DeleteWorkflow(ctx context.Context, userID, id string) error {
	return s.do(ctx, func(t *wtx) error {
		return t.execOne("workflow",
			`UPDATE workflows SET deleted = 1 WHERE id = ? AND user_id = ? AND deleted = 0`, id, userID)
	})
}
