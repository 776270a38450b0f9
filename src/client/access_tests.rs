use super::identity::os_user_name;

#[test]
fn os_user_names_come_from_the_password_database() {
    assert_eq!(os_user_name(0).as_deref(), Some("root"));
    assert_eq!(os_user_name(u32::MAX - 7), None);
}
