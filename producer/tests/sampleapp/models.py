"""A tiny app shaped like Fusion's hard cases: a custom db_table with a space and capitals, a many-to-many
field, reverse foreign keys with CASCADE (two levels and a self-reference), SET_NULL, PROTECT, DO_NOTHING and
RESTRICT, a to_field, and a proxy and an unmanaged model that have no table of their own."""
from django.db import models


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Article(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    published_at = models.DateTimeField()
    tags = models.ManyToManyField(Tag, related_name="articles")

    class Meta:
        db_table = "Blog Article"


class Comment(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE)
    parent = models.ForeignKey("self", null=True, on_delete=models.CASCADE)
    created = models.DateField()


class Reply(models.Model):
    comment = models.ForeignKey(Comment, on_delete=models.CASCADE, db_column="commentRef")


class Bookmark(models.Model):
    article = models.ForeignKey(Article, null=True, on_delete=models.SET_NULL, related_name="+")


class Citation(models.Model):
    article = models.ForeignKey(Article, on_delete=models.PROTECT)


class Mention(models.Model):
    article = models.ForeignKey(Article, on_delete=models.DO_NOTHING, db_constraint=False)


class Revision(models.Model):
    code = models.CharField(primary_key=True, max_length=20)
    article = models.ForeignKey(Article, to_field="slug", on_delete=models.RESTRICT)


class ArticleProxy(Article):
    class Meta:
        proxy = True


class External(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE)

    class Meta:
        managed = False
        db_table = "external_thing"


# Shaped like Fusion's leave app, for the end-to-end archival test: CASCADE two levels deep, SET_NULL and
# PROTECT, and no self-reference (the worker refuses CASCADE cycles such as Comment.parent; see Article).
class Leave(models.Model):
    applicant = models.CharField(max_length=50)
    timestamp = models.DateTimeField()


class LeaveSegment(models.Model):
    leave = models.ForeignKey(Leave, on_delete=models.CASCADE, related_name="segments")
    day = models.DateField()


class SegmentNote(models.Model):
    segment = models.ForeignKey(LeaveSegment, on_delete=models.CASCADE)
    text = models.TextField()


class LeaveNotice(models.Model):
    leave = models.ForeignKey(Leave, null=True, on_delete=models.SET_NULL)


class LeaveAudit(models.Model):
    leave = models.ForeignKey(Leave, on_delete=models.PROTECT)
